"""pika's transport, as beatd patches it: frames waiting when the socket is writable go out in
a few sends of at most SEND_CHUNK_MAX bytes, in order, partial sends included."""

from __future__ import annotations

from collections import deque

from beatd.runtime import rabbitmq


class Socket:
    def __init__(self, take_max: int) -> None:
        self.take_max = take_max
        self.sends: list[bytes] = []

    def send(self, data: bytes) -> int:
        taken = data[: self.take_max]
        self.sends.append(taken)
        return len(taken)


class Transport:
    """What pika's _AsyncTransportBase._produce uses of itself."""

    def __init__(self, frames: list[bytes], take_max: int) -> None:
        self._tx_buffers = deque(frames)
        self._tx_buffered_byte_count = sum(map(len, frames))
        self._sock = Socket(take_max)

    @staticmethod
    def _sigint_safe_send(sock: Socket, data: bytes) -> int:
        return sock.send(data)


def test_frames_waiting_together_go_out_in_few_sends_in_order() -> None:
    frames = [f"{n:06d}".encode() * 80 for n in range(1000)]  # 480 bytes each, like a run's
    transport = Transport(frames, take_max=1 << 30)
    rabbitmq._produce_joined(transport)
    sent = transport._sock.sends
    assert b"".join(sent) == b"".join(frames)
    assert len(sent) == -(-len(b"".join(frames)) // rabbitmq.SEND_CHUNK_MAX)
    assert all(len(s) <= rabbitmq.SEND_CHUNK_MAX for s in sent)
    assert transport._tx_buffered_byte_count == 0


def test_a_partial_send_keeps_the_rest_in_order() -> None:
    frames = [bytes([65 + n % 26]) * 300 for n in range(50)]
    transport = Transport(frames, take_max=1000)
    rabbitmq._produce_joined(transport)
    assert b"".join(transport._sock.sends) == b"".join(frames)
    assert not transport._tx_buffers


def test_one_frame_is_sent_as_it_is() -> None:
    transport = Transport([b"x" * 10], take_max=1 << 30)
    rabbitmq._produce_joined(transport)
    assert transport._sock.sends == [b"x" * 10]
