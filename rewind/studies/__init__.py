"""Studies as plain specs: the runs each needs (trunks, branches of them) as a plan of jobs, how one job
trains, and the study's summary, so an executor can train them inline, in local processes or as
cluster jobs. Importing this package registers every study's and executor's settings section
(`sections`)."""

from rewind.studies import sections  # noqa: F401
