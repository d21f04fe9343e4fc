"""Telemetry: where a run's numbers go (W&B and TensorBoard sinks, same tag names in both), and
the per-layer statistics and histograms computed on the device during training."""

from initbench.telemetry.jacobian import jacobian_singular_values, spectrum_summary
from initbench.telemetry.observer import Telemetry, build_telemetry
from initbench.telemetry.sinks import (
    Histogram,
    MultiSink,
    Sink,
    SinkContext,
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
    "SinkContext",
    "Telemetry",
    "TensorBoardSink",
    "WandbSink",
    "build_telemetry",
    "figure_to_rgb",
    "find_probes",
    "jacobian_singular_values",
    "stack",
    "spectrum_summary",
    "summarize",
]
