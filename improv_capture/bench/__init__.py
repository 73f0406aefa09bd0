"""What only the benchmarks use (scripts/bench_rooms.py): never loaded by the product."""
