"""devstack's benchmark harness: one command, figures and ratios against anchors measured in the
same run.

    python -m bench [--quick] [--only supervisor|proxy|reload]

Run it from the repository's root (it imports ``bench`` from there and runs ``python -m
devstack``). A full run takes about six minutes on a 2-core machine, ``--quick`` about two.
Section A (``supervisor``) compares ``devstack up --no-proxy`` with ``honcho start`` on twenty
services; section B (``proxy``) compares devstack's HTTPS proxy with Caddy in front of an aiohttp
service and nginx, with the upstream reached directly as the anchor; section C (``reload``)
compares devstack's hot reload with watchfiles' CLI restarting the same service behind Caddy
(edit to new response, failed requests during reloads, idle CPU). Everything listens on
loopback ports picked by binding port 0; every process the bench starts is stopped and its
temporary folder removed at the end, also on Ctrl-C. Exit code: 0 every target met, 1 some
missed, 2 the bench could not measure (a tool missing, a contender that would not start).

See bench/README.md for what each figure means and what to install.
"""
