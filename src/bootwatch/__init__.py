"""bootwatch: open boot-integrity monitoring for machines with a TPM or vTPM."""

from bootwatch.errors import BootwatchError

__all__ = ["BootwatchError", "__version__"]
__version__ = "0.1.0"
