"""Request and response models of the `/v1` commands: they validate input and generate the OpenAPI document."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from bridge.domain.identifiers import IDENTIFIER_PATTERN

MAX_BODY_BYTES = 64 * 1024
MAX_POST_METADATA = 16 * 1024
MAX_THREAD_METADATA = 8 * 1024
MAX_SEQ = 2**53 - 1  # a seq or cursor: far within SQLite's integer, and exact in every JSON client (JavaScript's too)
MAX_LIMIT = 200
MAX_WAIT_MS = 30_000


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


# Encoders made once (json.dumps with options builds one per call): compact UTF-8 JSON to measure metadata, and the
# canonical form of a post's payload for its idempotency fingerprint.
_COMPACT_UTF8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _json_size(limit: int) -> AfterValidator:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        if not value:  # `{}`: nothing to measure (most posts carry no metadata)
            return value
        size = len(_COMPACT_UTF8.encode(value).encode("utf-8", "surrogatepass"))
        if size > limit:
            raise ValueError(f"must encode to at most {limit} bytes of JSON (got {size})")
        return value

    return AfterValidator(check)


def _body_size(text: str) -> str:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY_BYTES:
        raise ValueError(f"must be at most {MAX_BODY_BYTES} bytes of UTF-8 (got {size})")
    return text


def _integral(value: Any) -> Any:
    """JSON Schema's `integer` includes 101.0: an integral float becomes an int. Everything else (101.5, true,
    "101") is left to the strict int after it, which refuses it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integral = BeforeValidator(_integral)
"""Put after the bounds in every integer field: `Annotated[int, Field(ge=.., le=..), Integral]` (the bounds then
show as minimum and maximum in the JSON Schema; every integer input is bounded)."""

Seq = Annotated[int, Field(ge=0, le=MAX_SEQ), Integral]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT), Integral]
WaitMs = Annotated[int, Field(ge=0, le=MAX_WAIT_MS), Integral]
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
Text = Annotated[str, AfterValidator(_no_nul), Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})]
ThreadType = Literal["conversation", "workflow", "incident"]
ThreadStatus = Literal["active", "blocked", "resolved", "closed"]
MessageKind = Literal["chat", "event", "system"]
Metadata8K = Annotated[dict[str, Any], _json_size(MAX_THREAD_METADATA)]
Metadata16K = Annotated[dict[str, Any], _json_size(MAX_POST_METADATA)]

@dataclass(frozen=True)
class Claim:
    """Marks an input field as an identity hint: when given, it must equal this claim of the caller's token
    (`workspace_id` -> WORKSPACE_MISMATCH, the others -> FORBIDDEN `claim_mismatch`). Identity always comes from
    the token; the check is `authz.check_identity_hints`, run for every command before its handler."""

    name: Literal["workspace_id", "agent_id", "session_id"]


HINT = "Optional; must equal your token's {} (identity always comes from the token)."


def _hint(claim: str) -> Any:
    return Field(default=None, description=HINT.format(claim))


class Input(BaseModel):
    """Base of command inputs: unknown fields are refused, types are not coerced (an integral float is an integer,
    as in JSON Schema). Every command accepts the identity hints `workspace_id` and `agent_id`."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    workspace_id: Annotated[Identifier | None, Claim("workspace_id")] = _hint("workspace_id")
    agent_id: Annotated[Identifier | None, Claim("agent_id")] = _hint("agent_id")

    @classmethod
    @functools.cache
    def claim_fields(cls) -> tuple[tuple[str, str], ...]:
        """(field, claim) of every identity hint this input accepts, workspace first (computed once per class)."""
        found = [(name, meta.name) for name, info in cls.model_fields.items()
                 for meta in info.metadata if isinstance(meta, Claim)]
        return tuple(sorted(found, key=lambda pair: pair[1] != "workspace_id"))

    def identity_hints(self) -> list[tuple[str, str, str]]:
        """(field, claim, value) of every identity hint given in this input, workspace first."""
        return [(name, claim, value) for name, claim in self.claim_fields()
                if (value := getattr(self, name)) is not None]


class ParticipantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    agent_id: Identifier
    thread_role: Identifier = "participant"


def _participant_list(values: list[Identifier | ParticipantSpec]) -> list[ParticipantSpec]:
    specs = [v if isinstance(v, ParticipantSpec) else ParticipantSpec(agent_id=v) for v in values]
    ids = [s.agent_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("participants must be unique")
    return specs


Participants = Annotated[list[Identifier | ParticipantSpec], AfterValidator(_participant_list),
                         Field(json_schema_extra={"uniqueItems": True})]
PARTICIPANTS = ("Agent ids, or {agent_id, thread_role} objects; each agent at most once (an id and an object naming "
                "the same agent are duplicates).")


class CreateThreadInput(Input):
    title: Annotated[Text, StringConstraints(min_length=1, max_length=200)]
    type: ThreadType
    participants: Annotated[Participants, Field(min_length=1, max_length=20, description=PARTICIPANTS)]
    created_by: Annotated[Identifier | None, Claim("agent_id")] = _hint("agent_id")
    metadata: Metadata8K = Field(default_factory=dict)
    idempotency_key: Annotated[Text, StringConstraints(min_length=1, max_length=128)] | None = None


class ThreadRef(Input):
    thread_id: Identifier = Field(description="The thread, as returned by create_thread (thr_…).")


class GetThreadInput(ThreadRef):
    pass


class ListThreadsInput(Input):
    status: ThreadStatus | None = None
    type: ThreadType | None = None
    participant: Identifier | None = None
    updated_since: Annotated[str, StringConstraints(max_length=40)] | None = Field(
        default=None, description="ISO-8601 timestamp")
    limit: Limit = 50
    cursor: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None, description="The next_cursor of the previous page, as given (anything else is refused).")


class UpdateParticipantsInput(ThreadRef):
    add: Annotated[Participants, Field(max_length=20, description=PARTICIPANTS)] = Field(default_factory=list)
    remove: Annotated[list[Identifier], Field(max_length=20)] = Field(
        default_factory=list, description="Agent ids to remove; an agent cannot be both added and removed.")


class UpdateThreadStatusInput(ThreadRef):
    status: ThreadStatus
    reason: Annotated[Text, StringConstraints(min_length=1, max_length=500)]
    owner_agent_id: Identifier | None = None
    metadata: Metadata8K = Field(default_factory=dict)
    expected_status: ThreadStatus | None = Field(
        default=None, description="Compare-and-set: refuse with CONFLICT unless the thread has this status now.")


class SummarizeThreadInput(ThreadRef):
    max_messages: Annotated[int, Field(ge=1, le=1000), Integral] = 200


class PostMessageInput(ThreadRef):
    """The rule that kind=event needs metadata.event_type is said in the descriptions of kind and metadata, not as
    a JSON Schema if/then: model APIs that receive the MCP tool schemas refuse conditional keywords."""

    schema_version: Annotated[int, Field(ge=1, le=1, description="Always 1."), Integral]
    kind: MessageKind = Field(description="'chat' for conversation; 'event' for a work item (needs "
                                          "metadata.event_type); 'system' for notices.")
    body: Annotated[Text, StringConstraints(min_length=1, max_length=MAX_BODY_BYTES),
                    AfterValidator(_body_size)] = Field(description="The message text (up to 64 KiB of UTF-8).")
    metadata: Metadata16K = Field(default_factory=dict, description=(
        "Structured fields. Required for kind=event: event_type (finding_reported, fix_pushed, finding_verified, "
        "finding_rejected, re_review_requested, …); findings also carry finding_id, severity, file, line; fixes "
        "commit."))
    in_reply_to: Identifier | None = Field(default=None, description="message_id this answers (e.g. the finding "
                                                                     "a fix or verdict is about).")
    to: Annotated[list[Identifier], Field(max_length=20)] | None = Field(
        default=None, description="Agent ids this is addressed to: they are woken if their session is idle. "
                                  "Omit both to and to_role to address every participant.")
    to_role: Identifier | None = Field(default=None, description="Address every participant with this thread "
                                                                 "role instead of naming agents.")
    idempotency_key: Annotated[Text, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="Your key for this post: a retry with the same key and payload returns the "
                                  "first result instead of posting twice.")
    sender_agent_id: Annotated[Identifier | None, Claim("agent_id")] = _hint("agent_id")
    sender_session_id: Annotated[Identifier | None, Claim("session_id")] = _hint("session_id")

    @model_validator(mode="after")
    def _event_type(self) -> PostMessageInput:
        if self.kind == "event":
            event_type = self.metadata.get("event_type")
            if not isinstance(event_type, str) or not event_type:
                raise ValueError("metadata.event_type (a non-empty string) is required when kind=event")
        return self

    def payload_fingerprint(self) -> str:
        """The fields that must match for an idempotent replay."""
        return _CANONICAL.encode(
            [self.schema_version, self.kind, self.body, self.metadata, self.in_reply_to, self.to, self.to_role])


WAIT_MS = "Wait up to this many ms for something new instead of returning empty (long-poll; 0 = answer now)."


class ReadMessagesInput(ThreadRef):
    since_seq: Seq = Field(default=0, description="Return messages after this seq: the last seq you read (0 = "
                                                  "from the start).")
    limit: Limit = Field(default=50, description="At most this many messages; has_more says if there are more.")
    kinds: list[MessageKind] | None = Field(default=None, description="Only these kinds.")
    from_agent_id: Identifier | None = Field(default=None, description="Only messages from this agent.")
    event_type: Annotated[Text, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="Only events of this type.")
    wait_ms: WaitMs = Field(default=0, description=WAIT_MS)


class AckReadInput(ThreadRef):
    last_read_seq: Seq = Field(description="The latest seq you have handled (e.g. the latest_seq read_messages "
                                           "returned).")


class InboxInput(Input):
    limit: Limit = 50
    wait_ms: WaitMs = Field(default=0, description=WAIT_MS)


class HeartbeatSessionInput(Input):
    session_id: Annotated[Identifier, Claim("session_id")] = Field(
        description="Must equal your token's session_id (FORBIDDEN claim_mismatch otherwise).")
    runtime: Annotated[Text, StringConstraints(min_length=1, max_length=64)] = Field(
        description="What runs you, e.g. claude_code or codex_cli (a claude…/codex… prefix picks that resume "
                    "adapter).")
    status: Literal["active", "idle", "offline"] = Field(description="active: working (not woken); idle: waiting "
                                                                     "for work; offline: gone.")
    resumable: bool = Field(description="True when your session can be resumed by its id.")
    management_mode: Literal["managed", "unmanaged"] = Field(
        default="unmanaged", description="managed: the bridge may type into tmux_target to wake you.")
    tmux_target: Annotated[Text, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="Your tmux pane (session:window.pane or %id), for managed sessions.")
    cwd: Annotated[Text, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None, description="Your working directory (resume runs there).")
    host_id: Identifier | None = Field(
        default=None, description="The host you run on (only that host's worker wakes you); default: the server's.")


class TriggerParticipantInput(ThreadRef):
    target_agent_id: Identifier
    reason: Annotated[Text, StringConstraints(min_length=1, max_length=500)]
    trigger_prompt: Annotated[Text, StringConstraints(min_length=1, max_length=8192)] | None = None
    request_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")] | None = Field(
        default=None, description="Idempotency key; the x-request-id header when absent.")


# ---------------------------------------------------------------------------------------------------------------
# Outputs (documentation in the OpenAPI document; the services build plain dicts of these shapes).


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParticipantOut(Output):
    agent_id: str
    thread_role: str
    added_at: str


class EscalationOut(Output):
    owner_agent_id: str | None
    since: str
    reason: str
    escalated_by: str


class ThreadOut(Output):
    thread_id: str
    workspace_id: str
    title: str
    type: ThreadType
    status: ThreadStatus
    participants: list[ParticipantOut]
    escalation: EscalationOut | None
    latest_seq: int
    metadata: dict[str, Any]
    created_by: str
    created_at: str
    updated_at: str


class CreateThreadOutput(Output):
    thread_id: str
    status: ThreadStatus
    created_at: str
    replayed: bool


class ListThreadsOutput(Output):
    threads: list[ThreadOut]
    next_cursor: str | None


class UpdateThreadStatusOutput(Output):
    thread_id: str
    status: ThreadStatus
    updated_at: str
    changed: bool


class OpenItem(Output):
    message_id: str
    seq: int
    sender_agent_id: str
    finding_id: str | None
    severity: str | None
    file: str | None
    line: int | None
    title: str


class SummaryParticipant(Output):
    agent_id: str
    thread_role: str
    last_activity_at: str | None
    messages: int


class SummarizeThreadOutput(Output):
    summary: str
    open_items: list[OpenItem]
    last_status: ThreadStatus
    participants: list[SummaryParticipant]
    counts: dict[str, Any]


class PostMessageOutput(Output):
    message_id: str
    seq: int
    thread_status: ThreadStatus
    created_at: str
    replayed: bool


class MessageOut(Output):
    message_id: str
    thread_id: str
    seq: int
    schema_version: int
    kind: MessageKind
    body: str
    metadata: dict[str, Any]
    sender_agent_id: str
    sender_session_id: str
    in_reply_to: str | None
    to: list[str] | None
    to_role: str | None
    created_at: str


class WaitOut(Output):
    honoured: Literal[False] = Field(description="Always false: the call did not wait.")
    reason: Literal["agent_long_poll_limit", "server_long_poll_limit"] = Field(
        description="agent_long_poll_limit: your agent already holds its share of concurrent waits; "
                    "server_long_poll_limit: the server's waits are all taken.")
    retry_after_ms: int = Field(description="Wait about this long before asking to wait again.")


def _wait_out() -> Any:
    return Field(default=None, description="Present only when wait_ms was asked for but not honoured: the call "
                                           "answered at once, as with wait_ms=0.")


class ReadMessagesOutput(Output):
    messages: list[MessageOut]
    next_seq: int
    has_more: bool
    latest_seq: int
    unread_count: int
    wait: WaitOut | None = _wait_out()


class AckReadOutput(Output):
    ok: bool
    last_read_seq: int
    updated_at: str


class InboxEntry(Output):
    thread_id: str
    title: str
    status: ThreadStatus
    unread_count: int
    last_read_seq: int
    latest_seq: int
    addressed_to_me: int


class InboxOutput(Output):
    threads: list[InboxEntry]
    wait: WaitOut | None = _wait_out()


class HeartbeatSessionOutput(Output):
    ok: bool
    recorded_at: str


class TriggerParticipantOutput(Output):
    trigger_id: str
    target_agent_id: str
    action: Literal["trigger_runtime", "fallback_required"]
    result: Literal["queued", "fallback_required"]
    job_status: str
    fallback_action: Literal["resume_session", "spawn_session"] | None
    target_session_id: str | None
    runtime: str | None
    management_mode: str | None
    session_status: str | None
    stale_session: bool
    triggered_at: str
    replayed: bool
