"""``tlx bench``: the only timer — harness, statistics, reports, regression gate."""

from exporter.bench.bench import bench_run
from exporter.bench.result import BenchReport

__all__ = ["BenchReport", "bench_run"]
