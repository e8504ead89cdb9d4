"""Campaign DAG, activity states, matching, bidding and contract-net placement.

Pure library code: no I/O, no asyncio, no clocks. The monitor agent drives these
objects and does the networking and journaling.
"""

from zambeze_mesh.scheduling import states
from zambeze_mesh.scheduling.bidding import DEFAULT_BANDWIDTH_BPS, Bid, TenderKey, estimate_bid
from zambeze_mesh.scheduling.contract_net import (
    AgentDown,
    Announce,
    AwardDecisions,
    BidsReceived,
    ContractNet,
    ContractNetConfig,
    Deadline,
    Decision,
    Deferred,
    Effects,
    Failed,
    LateAcceptance,
    Placed,
    SendAward,
    SendCFP,
    SetTimer,
    Tender,
    Withdraw,
    Withdrawn,
)
from zambeze_mesh.scheduling.dag import MAX_ACTIVITIES, CampaignDag
from zambeze_mesh.scheduling.matching import (
    candidates,
    describe_needs,
    fits,
    no_candidates_message,
)
from zambeze_mesh.scheduling.model import (
    MONITOR,
    OUTPUT_REF_PREFIX,
    ActivityDef,
    AgentInfo,
    Requirements,
    activity_from_spec,
    agent_from_record,
    output_refs,
    parse_output_ref,
    transfer_dest_agent,
    valid_name,
)
from zambeze_mesh.scheduling.states import IllegalTransition, check_transition

__all__ = [
    "DEFAULT_BANDWIDTH_BPS",
    "MAX_ACTIVITIES",
    "MONITOR",
    "OUTPUT_REF_PREFIX",
    "ActivityDef",
    "AgentDown",
    "AgentInfo",
    "Announce",
    "AwardDecisions",
    "Bid",
    "BidsReceived",
    "CampaignDag",
    "ContractNet",
    "ContractNetConfig",
    "Deadline",
    "Decision",
    "Deferred",
    "Effects",
    "Failed",
    "IllegalTransition",
    "LateAcceptance",
    "Placed",
    "Requirements",
    "SendAward",
    "SendCFP",
    "SetTimer",
    "Tender",
    "TenderKey",
    "Withdraw",
    "Withdrawn",
    "activity_from_spec",
    "agent_from_record",
    "candidates",
    "check_transition",
    "describe_needs",
    "estimate_bid",
    "fits",
    "no_candidates_message",
    "output_refs",
    "parse_output_ref",
    "states",
    "transfer_dest_agent",
    "valid_name",
]
