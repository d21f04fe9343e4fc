"""Telemetry: where a run's numbers go (W&B and TensorBoard sinks, same tag names in both)."""

from initbench.telemetry.sinks import MultiSink, Sink, TensorBoardSink, WandbSink

__all__ = ["MultiSink", "Sink", "TensorBoardSink", "WandbSink"]
