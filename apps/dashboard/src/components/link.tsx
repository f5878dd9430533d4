import type { ComponentChildren } from 'preact';
import { navigate } from '../hooks/router';

export interface LinkProps {
  href: string;
  children: ComponentChildren;
  class?: string;
  id?: string;
  title?: string;
  'aria-current'?: 'page';
}

/** An ordinary link (middle-click, new tab and copy-link work) that navigates in-app on a plain click. */
export function Link({ href, children, ...rest }: LinkProps) {
  const onClick = (event: MouseEvent) => {
    if (
      event.defaultPrevented ||
      event.button !== 0 ||
      event.metaKey ||
      event.ctrlKey ||
      event.shiftKey ||
      event.altKey
    ) {
      return;
    }
    event.preventDefault();
    navigate(href);
  };
  return (
    <a href={href} onClick={onClick} {...rest}>
      {children}
    </a>
  );
}
