"""Free TCP ports on 127.0.0.1 for servers started by tests."""

import socket


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
