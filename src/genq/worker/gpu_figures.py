"""A GPU worker's device figures for its heartbeat: utilisation and memory in use, read through NVML
(nvidia-ml-py). On a CPU worker, or where NVML cannot start (no driver), there are none: never an error."""
from __future__ import annotations

import logging

log = logging.getLogger("genq.presence")


class GpuFigures:
    def __init__(self, device: str) -> None:
        """`device`: the worker's label ("cuda:3" names the machine's GPU 3, as NVML numbers them; "cpu")."""
        self._handle = None
        if not device.startswith("cuda"):
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = device.partition(":")[2] or "0"
            self._handle = (pynvml.nvmlDeviceGetHandleByIndex(int(index)) if index.isdigit()
                            else pynvml.nvmlDeviceGetHandleByUUID(index))
        except Exception as exc:  # no NVML library, no driver, an unknown device: no figures
            log.info("no GPU figures for %s: NVML said %s", device, " ".join(str(exc).split()) or type(exc).__name__)

    def read(self) -> dict[str, int]:
        """{"gpu_utilization": percent, "gpu_memory_used": bytes}, or {} without a GPU or when NVML fails."""
        if self._handle is None:
            return {}
        try:
            import pynvml

            rates = pynvml.nvmlDeviceGetUtilizationRates(self._handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(self._handle)
            return {"gpu_utilization": int(rates.gpu), "gpu_memory_used": int(memory.used)}
        except Exception:
            return {}
