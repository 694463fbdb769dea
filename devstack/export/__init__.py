"""The manifest as other engines' configuration: ``devstack export FORMAT`` and ``devstack import
caddy``. Pure: specs in, text out; it reads the manifest's specs and nothing that runs.

- :mod:`.options`: what the command line adds (domain, upstreams, images, root) and the rules
  every format shares (each service's port and image, the environment it gets)
- :mod:`.sites`: the routes grouped by host, in the order devstack's proxy tries them
- :mod:`.document`: an exported file (name and text) and how several are shown on stdout
- :mod:`.formats`: the formats by name, each module imported only when asked for
- :mod:`.caddy`: the production Caddyfile
- :mod:`.kubernetes`: Deployments, Services and Ingresses
- :mod:`.compose`: a Compose file
- :mod:`.process_manager`: systemd units and a supervisord file, through honcho's exporters
- :mod:`.caddyfile`: reading a Caddyfile into blocks (tokens, site blocks, directives)
- :mod:`.caddy_import`: the subset of a Caddyfile devstack maps back to a manifest

Every format is a function ``render(spec, options) -> tuple[Document, ...]``; the output is
deterministic: the same manifest and options give the same bytes.
"""
