"""PyPI's torchvision for Linux is a CUDA build; beside a CPU torch its kernels cannot load, and its import
then fails registering `torchvision::nms`. vLLM's LLaVA-Next imports it (through transformers' image
processors), using only its pure-Python transforms. `install()` defines the two missing operator
schemas just before torchvision is first imported, only in that pairing (CUDA torchvision, CPU torch);
the kernels stay unavailable. `make` writes a .pth file so every process of the venv does this.
Importing this module imports nothing heavy.
"""

from __future__ import annotations

import sys
import sysconfig
from importlib.machinery import PathFinder
from pathlib import Path

PTH = "hired_bench_torchvision_cpu.pth"
PTH_LINE = (
    "import importlib.util; importlib.util.find_spec('profiler') and "
    "__import__('profiler.measure.torchvision_cpu').measure.torchvision_cpu.install()\n"
)
_library = None  # the schemas' torch.library.Library: kept, or they are unregistered


class _BeforeTorchvision:
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = PathFinder.find_spec(name, path)
        if spec is not None and spec.origin and _cuda_build_beside_cpu_torch(Path(spec.origin).parent):
            _define_schemas()
        return spec


def _cuda_build_beside_cpu_torch(package: Path) -> bool:
    try:
        version = (package / "version.py").read_text()
    except OSError:
        return False
    if "+cu" not in version:
        return False
    import torch

    return torch.version.cuda is None


def _define_schemas() -> None:
    global _library
    import torch

    _library = torch.library.Library("torchvision", "DEF")
    _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def install() -> None:
    """Watch for the first `import torchvision` (a no-op once it is imported, or when already watching)."""
    if "torchvision" in sys.modules or any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _BeforeTorchvision())


def write_pth() -> Path:
    """The .pth file that installs the watch in every process of this environment (vLLM's too)."""
    path = Path(sysconfig.get_paths()["purelib"]) / PTH
    path.write_text(PTH_LINE)
    return path


if __name__ == "__main__":
    print(f"wrote {write_pth()}")
