"""ISO 7816 primitives: APDU, status words, BER-TLV, ATR, T=0 handling (sans-IO, DESIGN §2)."""

from agent.card.apdu import CardChannel, CommandApdu, ResponseApdu
from agent.card.atr import Atr, InterfaceGroup, parse_atr
from agent.card.sw import check, describe, error_for, tries_left
from agent.card.t0 import T0Exchange, request, transceive
from agent.card.tlv import Tlv, decode, decode_one, encode, find, find_value

__all__ = [
    "Atr",
    "CardChannel",
    "CommandApdu",
    "InterfaceGroup",
    "ResponseApdu",
    "T0Exchange",
    "Tlv",
    "check",
    "decode",
    "decode_one",
    "describe",
    "encode",
    "error_for",
    "find",
    "find_value",
    "parse_atr",
    "request",
    "transceive",
    "tries_left",
]
