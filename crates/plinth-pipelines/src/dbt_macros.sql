{#- dbt's cross-database macros (`dbt.datediff(...)`, `dbt.type_string()`,
    ...) in the SQL Plinth runs (DataFusion), with DuckDB's meaning where
    dialects differ, since projects come from dbt-duckdb. Imported as `dbt`
    into every node and into the project's macros. -#}

{% macro current_timestamp() %}now(){% endmacro %}

{% macro date_trunc(datepart, date) %}date_trunc('{{ datepart }}', {{ date }}){% endmacro %}

{% macro dateadd(datepart, interval, from_date_or_timestamp) -%}
({{ from_date_or_timestamp }} + cast(({{ interval }}) || ' {{ datepart }}' as interval))
{%- endmacro %}

{#- Counts boundaries crossed, as DuckDB's date_diff does; weeks start on
    Sunday, as in dbt-duckdb (1969-12-28 was a Sunday). -#}
{% macro datediff(first_date, second_date, datepart) -%}
{%- set part = datepart | lower -%}
{%- if part == 'day' -%}
(cast({{ second_date }} as date) - cast({{ first_date }} as date))
{%- elif part == 'week' -%}
(cast(floor((cast({{ second_date }} as date) - date '1969-12-28') / 7) as bigint) - cast(floor((cast({{ first_date }} as date) - date '1969-12-28') / 7) as bigint))
{%- elif part == 'month' or part == 'quarter' or part == 'year' -%}
{%- set months = "((date_part('year', " ~ second_date ~ ") - date_part('year', " ~ first_date ~ ")) * 12 + date_part('month', " ~ second_date ~ ") - date_part('month', " ~ first_date ~ "))" -%}
{%- if part == 'month' -%}cast({{ months }} as bigint)
{%- elif part == 'quarter' -%}cast((date_part('year', {{ second_date }}) - date_part('year', {{ first_date }})) * 4 + date_part('quarter', {{ second_date }}) - date_part('quarter', {{ first_date }}) as bigint)
{%- else -%}cast(date_part('year', {{ second_date }}) - date_part('year', {{ first_date }}) as bigint)
{%- endif -%}
{%- else -%}
{%- set seconds = {'hour': 3600, 'minute': 60, 'second': 1}[part] -%}
(cast(floor(date_part('epoch', cast({{ second_date }} as timestamp)) / {{ seconds }}) as bigint) - cast(floor(date_part('epoch', cast({{ first_date }} as timestamp)) / {{ seconds }}) as bigint))
{%- endif -%}
{%- endmacro %}

{% macro last_day(date, datepart) -%}
cast(date_trunc('{{ datepart }}', {{ date }}) + interval '1 {{ datepart }}' - interval '1 day' as date)
{%- endmacro %}

{% macro safe_cast(field, type) %}try_cast({{ field }} as {{ type }}){% endmacro %}
{% macro cast(field, type) %}cast({{ field }} as {{ type }}){% endmacro %}
{% macro cast_bool_to_text(field) %}cast({{ field }} as varchar){% endmacro %}
{% macro concat(fields) %}{{ fields | join(' || ') }}{% endmacro %}
{% macro hash(field) %}md5(cast({{ field }} as varchar)){% endmacro %}
{% macro split_part(string_text, delimiter_text, part_number) %}split_part({{ string_text }}, {{ delimiter_text }}, {{ part_number }}){% endmacro %}
{% macro replace(field, old_chars, new_chars) %}replace({{ field }}, {{ old_chars }}, {{ new_chars }}){% endmacro %}
{% macro length(expression) %}length({{ expression }}){% endmacro %}
{% macro position(substring_text, string_text) %}strpos({{ string_text }}, {{ substring_text }}){% endmacro %}
{% macro right(string_text, length_expression) %}right({{ string_text }}, {{ length_expression }}){% endmacro %}
{% macro any_value(expression) %}first_value({{ expression }}){% endmacro %}
{% macro bool_or(expression) %}bool_or({{ expression }}){% endmacro %}
{% macro listagg(measure, delimiter_text="','", order_by_clause=none, limit_num=none) -%}
string_agg({{ measure }}, {{ delimiter_text }}{% if order_by_clause %} {{ order_by_clause }}{% endif %})
{%- endmacro %}
{% macro string_literal(value) %}'{{ value }}'{% endmacro %}
{% macro escape_single_quotes(expression) %}{{ expression | replace("'", "''") }}{% endmacro %}
{% macro except() %}except{% endmacro %}
{% macro intersect() %}intersect{% endmacro %}
{% macro date(year, month, day) %}make_date({{ year }}, {{ month }}, {{ day }}){% endmacro %}

{% macro type_string() %}varchar{% endmacro %}
{% macro type_int() %}integer{% endmacro %}
{% macro type_bigint() %}bigint{% endmacro %}
{% macro type_float() %}double{% endmacro %}
{% macro type_numeric() %}numeric(28, 6){% endmacro %}
{% macro type_timestamp() %}timestamp{% endmacro %}
{% macro type_boolean() %}boolean{% endmacro %}
