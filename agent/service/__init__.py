"""Living under systemd: notifications and the journal, our drop-ins, environment files as
systemd reads them."""
