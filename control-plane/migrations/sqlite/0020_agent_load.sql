-- Load-aware placement (issue #20): what an agent's last heartbeat said of its load (JSON:
-- cpu_percent, memory_percent, load1_hundredths, cores, overloaded), none from an older agent.
ALTER TABLE agents ADD COLUMN load TEXT;
