"""Telemetry: where a run's numbers go (W&B and TensorBoard sinks, same tag names in both), and
the per-layer statistics and histograms computed on the device during training."""

from initbench.telemetry.observer import Telemetry, build_telemetry, check_telemetry_params
from initbench.telemetry.sinks import (
    Histogram,
    MultiSink,
    Sink,
    TensorBoardSink,
    WandbSink,
    figure_to_rgb,
)
from initbench.telemetry.stats import FIELDS, Probe, find_probes, stack, summarize

__all__ = [
    "FIELDS",
    "Histogram",
    "MultiSink",
    "Probe",
    "Sink",
    "Telemetry",
    "TensorBoardSink",
    "WandbSink",
    "build_telemetry",
    "check_telemetry_params",
    "figure_to_rgb",
    "find_probes",
    "stack",
    "summarize",
]
