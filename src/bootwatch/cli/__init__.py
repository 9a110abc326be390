"""bootwatch.cli"""

__all__: list[str] = []
