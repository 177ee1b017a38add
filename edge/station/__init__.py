"""The technician's station: a local page at the box, `/healthz`, `/readyz`, `/metrics`, systemd notify.

`Station` (station.py) is what the agent's loop talks to; the HTTP server (server.py) and
prometheus-client (metrics.py) are imported only when `ui.listen` is on, so
`leukedge agent --help` and a page-less agent stay light.
"""

from edge.station.state import StationView
from edge.station.station import Station

__all__ = ["Station", "StationView"]
