{#- int_customer_months is incremental: a run recomputes the months a load
    touched and keeps the others. The first month it recomputes: the earliest
    month the latest load changed or brought (audit.load_months: rows dated in
    it, or an account opened or closed in it), or a reporting month the table
    does not hold yet. NULL when there is none. -#}
{% macro customer_months_rebuilt_from() -%}
    (
        select min(touched.month_start)
        from (
            select changed.month_start
            from {{ ref('load_months') }} as changed
            inner join {{ source('broker', 'latest_load') }} as load
                on changed.load_id = load.load_id
            where changed.is_new or changed.is_changed
            union all
            select reporting.month_start
            from {{ ref('int_reporting_months') }} as reporting
            where reporting.month_start not in (select built.month_start from {{ this }} as built)
        ) as touched
    )
{%- endmacro %}

{#- The customers int_customer_months builds every month of: those keyed in the
    latest load (int_customer_keys), new to the accounts. -#}
{% macro customers_keyed_in_this_load() -%}
    (
        select keys.customer_key
        from {{ ref('int_customer_keys') }} as keys
        where keys.first_load_id = (select load.load_id from {{ source('broker', 'latest_load') }} as load)
    )
{%- endmacro %}

{#- The pre-hook of int_customer_months: delete the rows the run recomputes (the
    months from customer_months_rebuilt_from on, the customers keyed in this
    load), the months no longer reported and the customers no longer in the
    accounts. -#}
{% macro delete_customer_months_to_rebuild() -%}
    {%- if is_incremental() -%}
    delete from {{ this }}
    where month_start >= {{ customer_months_rebuilt_from() }}
        or month_start not in (select month_start from {{ ref('int_reporting_months') }})
        or customer_key in {{ customers_keyed_in_this_load() }}
        or customer_key not in (
            select customer_key from {{ ref('int_accounts_rolled_up_to_customers') }}
        )
    {%- else -%}
    select 'a full build: nothing to delete' as deleted
    {%- endif -%}
{%- endmacro %}

{#- In int_customer_months (incremental): the rows it recomputes, of the months
    from rebuilt.from_month and of the customers keyed in this load (new_customers;
    both CTEs of the model). -#}
{% macro rebuilt_rows() -%}
    (
        month_start >= (select rebuilt.from_month from rebuilt)
        or customer_key in (select new_customers.customer_key from new_customers)
    )
{%- endmacro %}
