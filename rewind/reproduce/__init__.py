"""`rewind reproduce`: a paper's figures, one command each. Above the studies (it plans their runs and
draws from their tables); nothing below imports it. `papers` names what exists, `figure` what a figure
is, `run` plans, trains and draws, `config` holds its settings, and each paper has its own modules
(`kleinman2024`, its draw functions and its references)."""
