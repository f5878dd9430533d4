// Flat ESLint config: type-aware typescript-eslint rules plus Nx module boundaries that
// enforce the import table in docs/ARCHITECTURE.md (DESIGN §3).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import nx from '@nx/eslint-plugin';
import prettier from 'eslint-config-prettier';

export default tseslint.config(
  {
    ignores: [
      '**/node_modules/**',
      '**/dist/**',
      '**/.nx/**',
      '**/*.cjs',
      '**/*.mjs',
      '**/*.js',
      'tools/reference/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    plugins: { '@nx': nx },
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/consistent-type-imports': 'off',
      '@nx/enforce-module-boundaries': [
        'error',
        {
          enforceBuildableLibDependency: false,
          allow: [],
          depConstraints: [
            { sourceTag: 'type:contracts', onlyDependOnLibsWithTags: [] },
            { sourceTag: 'type:testing', onlyDependOnLibsWithTags: [] },
            { sourceTag: 'type:data', onlyDependOnLibsWithTags: ['type:contracts'] },
            {
              sourceTag: 'type:db',
              // type:testing is for the test folders only; see the rule on src/ below.
              onlyDependOnLibsWithTags: ['type:contracts', 'type:testing'],
            },
            // contracts for zod only: the one FineTuneSpec and lineage schemas (DESIGN §3).
            {
              sourceTag: 'type:lora-core',
              onlyDependOnLibsWithTags: ['type:data', 'type:contracts'],
            },
            {
              sourceTag: 'type:api',
              // type:testing is for the test folders only; see the rule on src/ below.
              onlyDependOnLibsWithTags: ['type:contracts', 'type:db', 'type:data', 'type:testing'],
            },
            {
              sourceTag: 'type:worker',
              onlyDependOnLibsWithTags: [
                'type:contracts',
                'type:db',
                'type:data',
                'type:lora-core',
              ],
            },
            {
              sourceTag: 'type:cli',
              onlyDependOnLibsWithTags: [
                'type:contracts',
                'type:data',
                'type:lora-core',
                'type:db',
                'type:testing',
              ],
            },
            { sourceTag: 'type:e2e', onlyDependOnLibsWithTags: ['*'] },
            {
              sourceTag: 'type:dashboard',
              onlyDependOnLibsWithTags: ['type:contracts'],
            },
          ],
        },
      ],
    },
  },
  {
    // The API must never load tfjs (DESIGN §3): it would pull native bindings into the HTTP tier.
    files: ['apps/api/**/*.ts', 'libs/db/**/*.ts', 'libs/contracts/**/*.ts', 'libs/data/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@tensorflow/*'],
              message: 'tfjs belongs in libs/lora-core and apps/worker only.',
            },
          ],
        },
      ],
    },
  },
  {
    // Process harnesses are for tests; shipped code must not load them. (The typescript-eslint
    // rule, so it does not replace the core no-restricted-imports rule above.)
    files: ['apps/*/src/**/*.ts', 'libs/*/src/**/*.ts'],
    ignores: ['**/*.spec.ts', 'libs/testing/**'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@lorafleet/testing'],
              message: '@lorafleet/testing is for test code (test/ folders and *.spec.ts) only.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.spec.ts', '**/test/**/*.ts'],
    rules: {
      // HTTP response bodies in tests are untyped JSON; assertions check their shape.
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/unbound-method': 'off',
    },
  },
  prettier,
);
