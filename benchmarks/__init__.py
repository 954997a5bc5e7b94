"""`make bench`: stagewatch measured beside a minimal floor script and dlt, against the simulator."""
