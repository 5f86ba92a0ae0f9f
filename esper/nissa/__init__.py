"""Nissa: the telemetry hub — typed events fan out to console, Parquet and TensorBoard backends."""

from esper.nissa.hub import ConsoleBackend, ParquetBackend, TelemetryHub, TensorBoardBackend, read_events

__all__ = ["ConsoleBackend", "ParquetBackend", "TelemetryHub", "TensorBoardBackend", "read_events"]
