"""The manifest: ``devstack.yaml`` or a Procfile read into frozen specs. Pure: nothing here starts
a process, binds a socket or touches the network.

- :mod:`.spec`: the frozen types (``StackSpec``, ``ServiceSpec``, ``RouteSpec`` ...)
- :mod:`.loader`: find, read, parse, apply defaults, validate
- :mod:`.schema`: the keys and types node by node, with line numbers
- :mod:`.env`: ``.env`` files and the environment each service is started with
"""
