-- One row per customer ever seen in the accounts: an integer customer_key that
-- never changes. The customer × month models join, group and sort on it, which
-- is much cheaper than on customer_id, and int_customer_months keeps the months
-- a load did not touch, keyed by it. A new customer gets the next keys in
-- customer_id order; a full refresh numbers the customers 1..n in that order. A
-- key is never reused, also when the customer's accounts leave the snapshot.
-- first_load_id: the load that gave the key. int_customer_months builds every
-- month of a customer keyed in the latest load, so on the first build of this
-- table (a warehouse whose keys were numbered afresh on every build) it builds
-- every customer's months again.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
) }}

with

customers as (
    select distinct accounts.customer_id
    from {{ ref('stg_broker__accounts') }} as accounts
    {%- if is_incremental() %}
    where accounts.customer_id not in (select known.customer_id from {{ this }} as known)
    {%- endif %}
),

numbered as (
    select
        customer_id,
        (
            {%- if is_incremental() %}
            (select coalesce(max(known.customer_key), 0) from {{ this }} as known)
            + {% endif -%}
            row_number() over (order by customer_id)
        )::integer as customer_key,
        (select load.load_id from {{ source('broker', 'latest_load') }} as load) as first_load_id
    from customers
)

select * from numbered
