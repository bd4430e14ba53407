"""Studies as plain specs: the runs each needs (trunks, branches of them), computed by one function, so
an executor can train them inline, in local processes or as cluster jobs, and one summary reads them back."""
