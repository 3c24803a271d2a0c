"""The daemon around the request pipeline: twistd options, the gateway service, reload, workers, systemd, status."""
