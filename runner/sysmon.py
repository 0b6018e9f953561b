"""CPU, memory and (where pynvml finds GPUs) GPU use, sampled during a run.

A background thread samples once a second; the samples go to the run folder as CSV and
MLflow logs them under `system/` (the names MLflow's own system metrics use), with
summary figures among the run's metrics.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import threading
import time
from typing import Dict, List, Optional

import psutil

log = logging.getLogger(__name__)

FIELDS = [
    "timestamp",  # seconds since the epoch: MLflow places the samples on the run's clock with it
    "time_s",  # seconds since the monitor started, for reading the CSV by eye
    "system/cpu_utilization_percentage",
    "system/system_memory_usage_megabytes",
    "driver_rss_megabytes",
    "system/gpu_utilization_percentage",
    "system/gpu_memory_usage_megabytes",
]


def _gpu_handles():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # noqa: BLE001 - no NVIDIA driver or no pynvml: CPU-only figures
        return None, []


class SystemMonitor:
    def __init__(self, interval_s: float = 1.0):
        self.interval_s = interval_s
        self.samples: List[Dict[str, Optional[float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runner-sysmon", daemon=True)
        self._driver = psutil.Process(os.getpid())
        self._nvml, self._gpus = _gpu_handles()
        self._start = time.time()
        self._gpu_error_logged = False

    def __enter__(self) -> "SystemMonitor":
        psutil.cpu_percent(None)  # the first reading only sets the baseline
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample(self) -> Dict[str, Optional[float]]:
        now = time.time()
        sample: Dict[str, Optional[float]] = {
            "timestamp": now,
            "time_s": now - self._start,
            "system/cpu_utilization_percentage": psutil.cpu_percent(None),
            "system/system_memory_usage_megabytes": psutil.virtual_memory().used / 2**20,
            "driver_rss_megabytes": self._driver.memory_info().rss / 2**20,
            "system/gpu_utilization_percentage": None,
            "system/gpu_memory_usage_megabytes": None,
        }
        if self._gpus:
            try:
                utils = [self._nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._gpus]
                used = [self._nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._gpus]
            except Exception as error:  # noqa: BLE001 - any NVML error: a GPU lost, a driver reset
                self._gpu_failed(error)
            else:
                sample["system/gpu_utilization_percentage"] = sum(utils) / len(utils)
                sample["system/gpu_memory_usage_megabytes"] = sum(used) / 2**20
        return sample

    def _gpu_failed(self, error: Exception) -> None:
        # Once: it may repeat every second for the rest of the run. GPU queries go on, in case
        # the error passes.
        if not self._gpu_error_logged:
            self._gpu_error_logged = True
            log.warning("system metrics: the GPUs cannot be read (%s: %s); CPU and memory are still sampled", type(error).__name__, error)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append(self._sample())
            except psutil.Error:
                continue

    def csv_text(self) -> str:
        handle = io.StringIO()
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(self.samples)
        return handle.getvalue()

    def summary(self) -> Dict[str, float]:
        def values(key):
            return [s[key] for s in self.samples if s[key] is not None]

        figures: Dict[str, float] = {}
        cpu, rss, mem = values("system/cpu_utilization_percentage"), values("driver_rss_megabytes"), values("system/system_memory_usage_megabytes")
        if cpu:
            figures["cpu_utilization_mean_pct"] = sum(cpu) / len(cpu)
            figures["system_memory_peak_mb"] = max(mem)
            figures["driver_rss_peak_mb"] = max(rss)
        gpu, gpu_mem = values("system/gpu_utilization_percentage"), values("system/gpu_memory_usage_megabytes")
        if gpu:
            figures["gpu_utilization_mean_pct"] = sum(gpu) / len(gpu)
            figures["gpu_memory_peak_mb"] = max(gpu_mem)
        return figures
