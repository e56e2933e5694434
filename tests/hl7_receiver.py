"""An EHR's HL7 v2 interface in the tests: an MLLP listener (python-hl7's server) that keeps
every message it receives and answers each with the ACK code the test sets (AA by default)."""

from __future__ import annotations

import asyncio
from typing import Any

import hl7
import hl7.mllp

__all__ = ["Hl7Receiver"]


class Hl7Receiver:
    def __init__(self) -> None:
        self.messages: list[hl7.Message] = []
        self.answer_code = "AA"
        self.answer_text = ""
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Hl7Receiver:
        self._server = await hl7.mllp.start_hl7_server(self._serve, host="127.0.0.1", port=0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: Any, writer: Any) -> None:
        try:
            while not reader.at_eof():
                try:
                    block = await reader.readblock()
                except asyncio.IncompleteReadError:
                    break
                message = hl7.parse(block.decode())
                self.messages.append(message)
                ack = str(message.create_ack(self.answer_code, application="TEST-EHR"))
                if self.answer_text:
                    ack = f"{ack.rstrip(chr(13))}|{self.answer_text}"
                writer.writeblock(ack.encode())
                await writer.drain()
        finally:
            writer.close()

    def of_report(self, report_id: str) -> list[hl7.Message]:
        """The ORU^R01s received for one DiagnosticReport (OBR-3, the filler number), in order."""
        return [m for m in self.messages if str(m.segment("OBR")[3][0][0]) == report_id]
