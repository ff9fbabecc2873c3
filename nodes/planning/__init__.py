"""Everything that decides, with no socket in it: plans, strategies, the planner, the live
estimates, the quality and cascade tables, the hardware profiles, and the coordinator's core
(events in, actions out). It imports nothing from nodes/runtime or emulation/."""
