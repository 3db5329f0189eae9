"""The domain: pure definitions shared by every layer (errors, enums, public shapes, WAN base models, the
evaluation policy, training notes, digests). It imports nothing else of wanlora and touches no database."""
