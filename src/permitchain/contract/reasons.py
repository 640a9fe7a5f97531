"""Every reason code of the chain, by layer (docs/design.md §4; operations.md says what to do).

A reason code is what a plan, a permit, a result, an audit entry or a skip metric says about
why: the values are the audit trail's and the documents', and never change. Each is defined
once, here, under the first layer that decides it; a later layer that uses the same code says
so in its group's comment. Services import them from here.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------
# Common to every layer
# ---------------------------------------------------------------------------------------
#: A key held another Redis type than the contract's (a deny, a blocked plan, a dead
#: letter, a ``status`` problem: never a crash, a stall or silence).
WRONG_KEY_TYPE = "wrong_key_type"
#: A stream entry whose bytes are not UTF-8 (dead-lettered; the ``error`` opens with it).
NOT_UTF8 = "not_utf8"

# ---------------------------------------------------------------------------------------
# Planner: a proposal → an EXECUTE plan, or a SKIP with one of these
# ---------------------------------------------------------------------------------------
#: An EXECUTE plan was published.
PLAN_OK = "plan_ok"
#: The symbol is not in ``ALLOW_LIST_SYMBOLS`` (the governor denies with it too).
NOT_IN_ALLOWLIST = "not_in_allowlist"
#: The kill score is below ``KILL_SCORE_THRESHOLD``.
BELOW_THRESHOLD = "below_kill_score_threshold"
#: The proposal said HOLD.
HOLD_ACTION = "hold_action"
#: An action outside the contract's (P3.3 refuses a plan with one, and HOLD, with it too).
UNKNOWN_ACTION = "unknown_action"
#: Readable symbol, a missing or malformed field (UPDATE_SL without a positive stop price).
INVALID_PROPOSAL = "invalid_proposal"
#: The same plan (symbol, action, epoch, tranche) within ``DEDUPE_TTL``.
DUPLICATE_PLAN = "duplicate_plan"
#: The proposal is older than ``PROPOSAL_TTL_S``.
PROPOSAL_EXPIRED = "proposal_expired"
#: An external executor's proposal whose action closes nothing (UPDATE_SL, HOLD).
EXTERNAL_NOT_A_CLOSE = "external_not_a_close"

# ---------------------------------------------------------------------------------------
# Governor (P3.2): grant or deny; also NOT_IN_ALLOWLIST, WRONG_KEY_TYPE
# ---------------------------------------------------------------------------------------
#: Grant: testnet or dry_run with ``TESTNET_AUTO_APPROVE=true``.
TESTNET_AUTO_APPROVE = "testnet_auto_approve"
#: Grant: the production policy passed.
POLICY_OK = "policy_ok"
#: Grant: ``proof --canary``'s dry_run probe (ends at the executor, never an order).
CANARY_DRY_RUN = "canary_dry_run"
#: The trading state is HALTED or unreadable (the executor checks it again before the order).
TRADING_HALTED = "trading_halted"
#: The trading state is REDUCING and the plan is not reduce-only.
TRADING_REDUCING = "trading_reducing"
#: The plan is older than ``PLAN_MAX_AGE_S`` or past ``expires_at`` (P3.3, executor too).
PLAN_EXPIRED = "plan_expired"
#: The plan's mode is not the governor's ``APPLY_MODE``.
MODE_MISMATCH = "mode_mismatch"
#: ``MAX_EXEC_PER_HOUR`` reached for the symbol.
RATE_LIMIT_HOUR = "rate_limit_hour"
#: ``MAX_EXEC_PER_5MIN`` reached for the symbol.
RATE_LIMIT_5MIN = "rate_limit_5min"
#: A risk-increasing plan over ``DAILY_NOTIONAL_CAP`` today.
DAILY_NOTIONAL_CAP = "daily_notional_cap"
#: A risk-increasing plan over ``MAX_NOTIONAL_PER_TRADE`` (or of unknown notional).
NOTIONAL_CAP = "notional_cap"
#: Grant: an operator's emergency exit whose signed request verifies (any trading state).
OPERATOR_EMERGENCY_EXIT = "operator_emergency_exit"
#: An operator plan whose request does not verify (P3.3 denies with it too).
OPERATOR_SIGNATURE_INVALID = "operator_signature_invalid"

# ---------------------------------------------------------------------------------------
# Position brain (P3.3): allow or deny; also UNKNOWN_ACTION, PLAN_EXPIRED,
# OPERATOR_SIGNATURE_INVALID, WRONG_KEY_TYPE
# ---------------------------------------------------------------------------------------
#: Allow, with ``safe_close_qty`` (the executor's result reason for a fill too).
OK = "ok"
#: The plan's ``close_fraction`` disagrees with its action's own fraction.
INVALID_PLAN = "invalid_plan"
#: No snapshot for the symbol.
NO_EXCHANGE_SNAPSHOT = "no_exchange_snapshot"
#: The snapshot is older than ``STALE_THRESHOLD_S`` (or from the future by as much).
STALE_EXCHANGE_STATE = "stale_exchange_state"
#: The exchange position is below the symbol's minimum quantity.
NO_POSITION = "no_position"
#: Ledger and exchange on different sides.
SIDE_MISMATCH = "reconcile_required_side_mismatch"
#: Ledger and exchange amounts differ by more than the tolerance.
QTY_MISMATCH = "reconcile_required_qty_mismatch"
#: An order less than ``COOLDOWN_S`` ago, or another plan's close in flight.
COOLDOWN_IN_FLIGHT = "cooldown_in_flight"
#: The safe close quantity rounds down below the minimum quantity.
BELOW_MIN_QTY = "below_min_qty"
#: Reduce-only orders resting on the symbol leave no room for the close.
RESTING_REDUCE_ONLY = "resting_reduce_only"

# ---------------------------------------------------------------------------------------
# Executor, the consume step's verdicts (lua/consume_permits.lua); also OK
# ---------------------------------------------------------------------------------------
#: The plan already has an exec record (a redelivery, a restart): nothing changed.
ALREADY_EXECUTED = "already_executed"
#: The governor's permit has not arrived yet (the executor waits).
MISSING_GOVERNOR = "missing_governor"
#: P3.3's permit has not arrived yet (the executor waits).
MISSING_P33 = "missing_p33"
#: Neither permit has arrived yet (the executor waits).
MISSING_BOTH = "missing_both"
#: The governor denied; the detail is its reason.
GOVERNOR_DENIED = "governor_denied"
#: P3.3 denied; the detail is its reason.
P33_DENIED = "p33_denied"
#: A permit for another plan, symbol or schema, bad JSON, a disagreeing decision, a key of
#: the wrong type, or a signature that does not verify.
PERMIT_INVALID = "permit_invalid"
#: A permit was still missing at ``APPLY_PERMIT_WAIT_MS`` (the detail names which).
PERMIT_TIMEOUT = "permit_timeout"

# ---------------------------------------------------------------------------------------
# Executor, the rest; also PLAN_EXPIRED, TRADING_HALTED, WRONG_KEY_TYPE
# ---------------------------------------------------------------------------------------
#: Consumed by a process that died before sending: blocked on redelivery, nothing sent.
RECOVERED_UNSENT = "recovered_unsent"
#: A plan entry read after its exec record's retention: skipped, no second result.
BEYOND_RETENTION = "beyond_retention"
#: A dry-run plan (or ``APPLY_MODE=dry_run``): everything but the order.
DRY_RUN = "dry_run"
#: The exchange refused the order.
EXCHANGE_REJECTED = "exchange_rejected"
#: No confirmation, and not found by client order id.
EXCHANGE_UNKNOWN = "exchange_unknown"
#: An UPDATE_SL plan's reduce-only stop was placed.
STOP_PLACED = "stop_placed"
#: The stop's price was already passed: its quantity was closed at market instead.
STOP_CROSSED_CLOSED = "stop_crossed_closed"
#: The account's position mode changed while the chain ran: no order until ``resume``.
POSITION_MODE_CHANGED = "position_mode_changed"
#: Gate for external executors: a grant was written for the bot to claim.
GATE_GRANTED = "gate_granted"
#: Gate for external executors: a grant expired unclaimed.
GATE_NOT_CLAIMED = "gate_not_claimed"

# ---------------------------------------------------------------------------------------
# Exit brain: a cycle skipped for a symbol, no proposal (``exit_brain_skipped_total``)
# ---------------------------------------------------------------------------------------
#: The exchange could not be read.
FETCH_FAILED = "fetch_failed"
#: No price for the symbol.
NO_PRICE = "no_price"
#: The position has no entry price.
NO_ENTRY_PRICE = "no_entry_price"
#: The exit brain's own state for the symbol is unreadable.
BAD_STATE = "bad_state"
#: The ledger's position epoch is behind the exit brain's stored state for the symbol.
EPOCH_REGRESSED = "epoch_regressed"
#: Not enough bars yet for the kernel.
WARMING_UP = "warming_up"
