"""Small shared helpers: hardware and backends, atomic files, provenance, argparse types."""
