"""API models: the messenger types and bots of a module."""

from __future__ import annotations

from pydantic import Field

from host.api.api_model import ApiModel


class MessengerTypes(ApiModel):
    types: list[str] = Field(description="AccountType values", examples=[["Telegram"]])


class MessengerBotOut(ApiModel):
    id: str
    name: str
    type: str = Field(description="AccountType")
    description: str | None


class MessengerBots(ApiModel):
    bots: list[MessengerBotOut]
