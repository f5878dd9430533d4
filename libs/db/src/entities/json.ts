/**
 * JSON objects as stored in jsonb columns. Deliberately shallow: TypeORM's deep-partial
 * types reject `unknown` and never finish expanding a recursive JSON type.
 */
export type JsonValue = string | number | boolean | null | object;
export type JsonObject = { [key: string]: JsonValue };
