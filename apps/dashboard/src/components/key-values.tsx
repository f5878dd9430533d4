import type { ComponentChildren } from 'preact';

export type KeyValue = [label: string, value: ComponentChildren];

/** A description list; empty values show a dash so the layout never jumps. */
export function KeyValues({ items, id }: { items: KeyValue[]; id?: string }) {
  return (
    <dl class="kv" id={id}>
      {items.map(([label, value]) => (
        <div class="kv-row" key={label}>
          <dt>{label}</dt>
          <dd>
            {value === null || value === undefined || value === '' ? (
              <span class="muted">—</span>
            ) : (
              value
            )}
          </dd>
        </div>
      ))}
    </dl>
  );
}
