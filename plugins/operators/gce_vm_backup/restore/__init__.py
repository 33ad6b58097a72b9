"""Restores and drills: snapshot sets, the plan, the converging steps, holds and approvals."""
