"""The browser follows the stack: live reload.

- :mod:`.script`: the script pages get (served at ``/_devstack/live.js``) and the tag that loads it.
- :mod:`.injection`: which answers get that tag, and how it is added without buffering a page.
- :mod:`.endpoint`: the proxy's own paths under ``/_devstack/``, refused to other sites.
- :mod:`.hub`: the pages connected to ``/_devstack/live``, and what they are told when services
  reload or fail, and when static files change.
"""
