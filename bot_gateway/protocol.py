"""Discord's interaction protocol: numeric types, and pydantic models of the parts we read.

Only what the bot reads is modelled; unknown fields are ignored (Discord adds fields freely), while
missing or mistyped ones we rely on turn into a 400 rather than a crash.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class InteractionType(IntEnum):
    PING = 1
    APPLICATION_COMMAND = 2
    MESSAGE_COMPONENT = 3
    APPLICATION_COMMAND_AUTOCOMPLETE = 4
    MODAL_SUBMIT = 5


class ResponseType(IntEnum):
    PONG = 1
    CHANNEL_MESSAGE_WITH_SOURCE = 4
    DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE = 5
    DEFERRED_UPDATE_MESSAGE = 6
    UPDATE_MESSAGE = 7
    APPLICATION_COMMAND_AUTOCOMPLETE_RESULT = 8
    MODAL = 9


class OptionType(IntEnum):
    STRING = 3
    INTEGER = 4
    BOOLEAN = 5
    NUMBER = 10
    ATTACHMENT = 11


EPHEMERAL = 64
# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADMINISTRATOR = 1 << 3
MANAGE_MESSAGES = 1 << 13
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024
DISCORD_EPOCH_MS = 1_420_070_400_000
# An interaction token works this long after the interaction was created.
TOKEN_LIFETIME_S = 15 * 60


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class User(_Lenient):
    id: str
    username: str | None = None


class Member(_Lenient):
    user: User
    # The member's permissions in the channel, a bitfield as a decimal string (interactions only).
    permissions: str | None = None

    def has_permission(self, bit: int) -> bool:
        try:
            value = int(self.permissions or "0")
        except ValueError:
            return False  # unreadable permissions grant nothing (fail closed)
        return bool(value & (bit | ADMINISTRATOR))


class CommandOption(_Lenient):
    name: str
    type: int
    value: Any = None
    focused: bool = False  # in an autocomplete interaction: the option being typed


class CdnAttachment(_Lenient):
    """A file on Discord's CDN: an ATTACHMENT option's upload, or an image on a message."""

    id: str | int | None = None
    filename: str = ""
    url: str | None = None  # only files already on the CDN have one
    content_type: str | None = None
    size: int | None = None


class Resolved(_Lenient):
    """Objects an interaction's options refer to by id; an ATTACHMENT option's value is such an id."""

    attachments: dict[str, CdnAttachment] = Field(default_factory=dict)


class ModalField(_Lenient):
    """A text input of a submitted modal (inside an action row), or the row itself."""

    type: int = 0
    custom_id: str | None = None
    value: str | None = None
    components: list[ModalField] = Field(default_factory=list)


class InteractionData(_Lenient):
    name: str | None = None
    custom_id: str | None = None
    options: list[CommandOption] = Field(default_factory=list)
    resolved: Resolved = Field(default_factory=Resolved)
    components: list[ModalField] = Field(default_factory=list)  # a MODAL_SUBMIT's rows

    def modal_values(self) -> dict[str, str]:
        """A submitted modal's text inputs by custom_id."""
        values: dict[str, str] = {}
        for row in self.components:
            for field in row.components or [row]:
                if field.custom_id is not None and field.value is not None:
                    values[field.custom_id] = field.value
        return values


class EmbedField(_Lenient):
    name: str
    value: str


class Embed(_Lenient):
    title: str | None = None
    description: str | None = None
    fields: list[EmbedField] = Field(default_factory=list)


class Message(_Lenient):
    id: str | None = None
    embeds: list[Embed] = Field(default_factory=list)
    attachments: list[CdnAttachment] = Field(default_factory=list)


class Interaction(_Lenient):
    id: str
    application_id: str
    type: int
    token: str
    data: InteractionData | None = None
    guild_id: str | None = None
    member: Member | None = None
    user: User | None = None
    message: Message | None = None
    attachment_size_limit: int = DEFAULT_ATTACHMENT_LIMIT

    def created_at(self, received_at: float) -> float:
        """When Discord created the interaction (epoch seconds): its token dies 15 minutes later.

        The id is a snowflake that carries its creation time; ``received_at`` (our clock) is the
        fallback when the id does not look like one from the last 15 minutes.
        """
        try:
            created = ((int(self.id) >> 22) + DISCORD_EPOCH_MS) / 1000
        except ValueError:
            return received_at
        if received_at - TOKEN_LIFETIME_S < created <= received_at + 60:
            return min(created, received_at)
        return received_at

    @property
    def user_id(self) -> str | None:
        """In a guild the invoker is ``member.user``; in a DM it is ``user``."""
        if self.member is not None:
            return self.member.user.id
        return self.user.id if self.user is not None else None


def ephemeral(content: str) -> dict[str, Any]:
    """A message only the invoking user sees: refusals are nobody else's business."""
    return {
        "type": ResponseType.CHANNEL_MESSAGE_WITH_SOURCE,
        "data": {"content": content, "flags": EPHEMERAL},
    }
