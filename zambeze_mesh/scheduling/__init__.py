"""Campaign DAG, activity states, matching, bidding and contract-net placement.

Pure library code: no I/O, no asyncio, no clocks. The monitor agent drives these
objects and does the networking and journaling.

Names are imported lazily so that importing one pure module (the contract net, the
activity states) loads neither networkx (the DAG) nor gRPC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zambeze_mesh.lazy import lazy_exports

if TYPE_CHECKING:
    from zambeze_mesh.scheduling import states
    from zambeze_mesh.scheduling.bidding import (
        DEFAULT_BANDWIDTH_BPS,
        Bid,
        TenderKey,
        estimate_bid,
    )
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
    from zambeze_mesh.scheduling.dag import (
        MAX_ACTIVITIES,
        CampaignDag,
    )
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
    from zambeze_mesh.scheduling.states import (
        IllegalTransition,
        check_transition,
    )

_WHERE = {
    "DEFAULT_BANDWIDTH_BPS": "bidding",
    "Bid": "bidding",
    "TenderKey": "bidding",
    "estimate_bid": "bidding",
    "AgentDown": "contract_net",
    "Announce": "contract_net",
    "AwardDecisions": "contract_net",
    "BidsReceived": "contract_net",
    "ContractNet": "contract_net",
    "ContractNetConfig": "contract_net",
    "Deadline": "contract_net",
    "Decision": "contract_net",
    "Deferred": "contract_net",
    "Effects": "contract_net",
    "Failed": "contract_net",
    "LateAcceptance": "contract_net",
    "Placed": "contract_net",
    "SendAward": "contract_net",
    "SendCFP": "contract_net",
    "SetTimer": "contract_net",
    "Tender": "contract_net",
    "Withdraw": "contract_net",
    "Withdrawn": "contract_net",
    "MAX_ACTIVITIES": "dag",
    "CampaignDag": "dag",
    "candidates": "matching",
    "describe_needs": "matching",
    "fits": "matching",
    "no_candidates_message": "matching",
    "MONITOR": "model",
    "OUTPUT_REF_PREFIX": "model",
    "ActivityDef": "model",
    "AgentInfo": "model",
    "Requirements": "model",
    "activity_from_spec": "model",
    "agent_from_record": "model",
    "output_refs": "model",
    "parse_output_ref": "model",
    "transfer_dest_agent": "model",
    "valid_name": "model",
    "IllegalTransition": "states",
    "check_transition": "states",
}
_SUBMODULES = frozenset({"states"})

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


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals(), _SUBMODULES)
