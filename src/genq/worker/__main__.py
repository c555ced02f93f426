"""`genq-worker` / `python -m genq.worker`: the supervisor of one worker process per GPU (or N on
the CPU). See genq.worker.supervisor; each worker is genq.worker.child. `genq-worker --help`."""
from __future__ import annotations

from genq.worker.supervisor import main

if __name__ == "__main__":
    main()
