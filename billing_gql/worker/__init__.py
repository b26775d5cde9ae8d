"""Background work: the job queue (procrastinate), the periodic tick and the due-work sweeps."""
