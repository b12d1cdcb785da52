-- Nothing is lost: every raw row of every table is either in staging or in
-- quarantine. Returns the tables that do not add up.
select *
from {{ ref('load_reconciliation') }}
where raw_rows <> accepted_rows + quarantined_rows
