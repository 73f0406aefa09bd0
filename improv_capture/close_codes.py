"""WebSocket close codes of our sockets (docs/signaling.md), in one module light enough for
every side: the rooms (seats), the API's sockets and the cluster router, which passes them on
without loading aiortc."""

CLOSE_LEFT = 1000
CLOSE_INTERNAL = 1011
#: cluster mode: the worker that owns the room restarted / is not back yet (both: reconnect)
CLOSE_RESTART = 1012
CLOSE_TRY_LATER = 1013
#: several nodes: the room is on another node, named by the `moved` message sent before this
#: close (reconnect there); not a client fault
CLOSE_MOVED = 4308
CLOSE_MALFORMED = 4400
CLOSE_BAD_INVITE = 4401
#: removed by the operator: the same invite cannot rejoin
CLOSE_REMOVED = 4403
#: the room does not exist, or was closed
CLOSE_ROOM_NOT_FOUND = 4404
CLOSE_HELLO_TIMEOUT = 4408
#: the invite's seat is held by another socket (a resume needs the seat's secret)
CLOSE_SEAT_IN_USE = 4409
CLOSE_EXPIRED = 4410
CLOSE_TOO_LARGE = 4413
#: kept sending far over the message budget (4429 is taken: room is full)
CLOSE_FLOOD = 4420
CLOSE_ROOM_FULL = 4429
CLOSE_REPLACED = 4499
#: the client's own fault: retrying cannot help (the page and the console give up on these)
CLIENT_FAULT = range(4400, 4500)
