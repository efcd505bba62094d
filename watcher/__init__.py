"""The master's daemons: watch and rescan the spool, register drops, create fold jobs,
and the APScheduler sweeper that scores predictions and writes results."""
