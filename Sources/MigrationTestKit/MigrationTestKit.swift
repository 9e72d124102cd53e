// MigrationTestKit: the conformance suite for vendor modules.
