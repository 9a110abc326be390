"""bootwatch.lab: swtpm-backed simulated Trusted Launch VMs for tests, demos and load.

Public API: :class:`Lab` (``create_vm``, ``get_vm``, ``list_vms``,
``destroy_vm``, ``running``, ``ca_cert_path``), :class:`LabVm` (on disk),
:class:`RunningVm` (``tcti``, ``extend_pcr``, ``read_pcrs``, ``reboot``).
"""

from bootwatch.lab.lab import LAB_DIR_ENV, Lab, LabVm, RunningVm, default_lab_root

__all__ = ["LAB_DIR_ENV", "Lab", "LabVm", "RunningVm", "default_lab_root"]
