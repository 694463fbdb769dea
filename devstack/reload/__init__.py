"""Watching files -> change events; the supervisor and the proxy act on them (``devstack.app``
wires them). Imports nothing that runs services or serves requests.

- :mod:`.ignore`: what never triggers anything (VCS, caches, virtual environments, ``.devstack/``,
  editor files, ``.gitignore``)
- :mod:`.changes`: a batch of changed paths -> a ``ChangeSet`` per service and static root
- :mod:`.loop`: the reload-loop detector
- :mod:`.watcher`: one watcher for the stack, behind a replaceable source (watchfiles' ``awatch``)
"""
