-- An agent fetches its partitions' schedules a page at a time, by (tenant, name) within a
-- partition: this index is that order (and replaces the one on the partition alone).
CREATE INDEX schedules_page ON schedules (cluster, partition, tenant, name);
DROP INDEX schedules_partition;
