"""Static routes: files from a folder, never anything outside it, never stale.

- :mod:`.locate`: where a request path lands, and what is refused (traversal, dotfiles, symlinks
  leaving the folder, listings).
- :mod:`.cache`: what is remembered between requests, files and answers (checked against the
  disk every time; the memory it may take).
- :mod:`.answer`: the answer to a GET or HEAD, for both lanes: the live page, precompressed
  siblings, ETag / Last-Modified / 304 / 412, ranges (206, 416).
- :mod:`.lane`: the fast lane's side: an answer written in one piece, or a large file streamed
  with back-pressure.
- :mod:`.full`: the full proxy's side (aiohttp): what the fast lane hands over (other methods,
  405 with ``Allow``; missing files, the 404 page; folders without their slash, 308).

Nothing is imported here: the fast lane's modules load without aiohttp (:mod:`.full` needs it).
"""
