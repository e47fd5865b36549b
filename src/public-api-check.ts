// Compile-time check that the implementation matches the hand-written public typings in ../index.d.ts.
// Classes are compared by their static side and their instances; constructors are internal.
import type * as Declared from '../index.js';
import * as Implemented from './index.js';

type Statics<C> = Omit<C, 'prototype'>;

export const freeFunctionsMatch: Pick<
  typeof Declared,
  'SeedinferError' | 'DEFAULT_MODEL' | 'ensureDefaultModel' | 'PYPI_MODELS' | 'ensurePypiModel' | 'pullModel' | 'defaultCacheDir' | 'quantizeModel' | 'QUANTIZE_FORMATS' | 'createServer'
> = Implemented;
export const modelStaticsMatch: Statics<typeof Declared.Model> = Implemented.Model;
export const modelMatches = (m: Implemented.Model): Declared.Model => m;
export const sessionMatches = (s: Implemented.Session): Declared.Session => s;
export const generationMatches = (g: Implemented.Generation): Declared.Generation => g;
