"""Coverage-guided fuzzing harnesses for bootwatch's pure input readers (issue 15 item 6).

``fuzz.targets`` holds one harness per target (importable by ``scripts/fuzz`` and by the
tests); ``fuzz.run`` drives one target under atheris/libFuzzer. See docs/fuzzing.md.
"""
