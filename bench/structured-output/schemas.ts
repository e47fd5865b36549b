// The 25 JSON schemas of increasing difficulty that __test__/structured-output.test.ts and bench/structured-output
// run on the default model: each with the request put to the model. Strings and numbers are bounded where a small
// model would otherwise run on until max_tokens (a valid but never-finished output).
export interface SchemaCase {
  name: string;
  ask: string;
  schema: Record<string, unknown>;
}

const str = { type: 'string', maxLength: 40 };
export const SCHEMAS: SchemaCase[] = [
  { name: 'one string', ask: 'the capital of France', schema: { type: 'object', properties: { answer: str }, required: ['answer'] } },
  { name: 'boolean', ask: 'whether the sky is blue', schema: { type: 'object', properties: { isBlue: { type: 'boolean' } }, required: ['isBlue'] } },
  { name: 'integer range', ask: 'the age of a young child', schema: { type: 'object', properties: { age: { type: 'integer', minimum: 1, maximum: 12 } }, required: ['age'] } },
  { name: 'number range', ask: 'a temperature in Celsius', schema: { type: 'object', properties: { celsius: { type: 'number', minimum: -50, maximum: 60 } }, required: ['celsius'] } },
  { name: 'enum', ask: 'the color of grass', schema: { type: 'object', properties: { color: { enum: ['red', 'green', 'blue'] } }, required: ['color'] } },
  {
    name: 'const and string',
    ask: 'a greeting',
    schema: { type: 'object', properties: { kind: { const: 'greeting' }, text: str }, required: ['kind', 'text'] },
  },
  {
    name: 'required and optional',
    ask: 'a book',
    schema: {
      type: 'object',
      properties: { title: str, author: str, year: { type: 'integer', minimum: 1400, maximum: 2030 } },
      required: ['title', 'author'],
    },
  },
  {
    name: 'nested object with a pattern',
    ask: 'a person and their address',
    schema: {
      type: 'object',
      properties: {
        name: str,
        address: { type: 'object', properties: { city: str, zip: { type: 'string', pattern: '^[0-9]{5}$' } }, required: ['city', 'zip'] },
      },
      required: ['name', 'address'],
    },
  },
  {
    name: 'array of strings',
    ask: 'three fruits',
    schema: { type: 'object', properties: { fruits: { type: 'array', items: str, minItems: 1, maxItems: 3 } }, required: ['fruits'] },
  },
  {
    name: 'array of bounded integers',
    ask: 'some small numbers',
    schema: {
      type: 'object',
      properties: { numbers: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 100 }, minItems: 2, maxItems: 4 } },
      required: ['numbers'],
    },
  },
  {
    name: 'array of objects',
    ask: 'a shopping list',
    schema: {
      type: 'object',
      properties: {
        items: {
          type: 'array',
          minItems: 1,
          maxItems: 3,
          items: { type: 'object', properties: { name: str, quantity: { type: 'integer', minimum: 1, maximum: 20 } }, required: ['name', 'quantity'], additionalProperties: false },
        },
      },
      required: ['items'],
      additionalProperties: false,
    },
  },
  { name: 'date format', ask: 'the date of a holiday', schema: { type: 'object', properties: { date: { type: 'string', format: 'date' } }, required: ['date'] } },
  { name: 'email format', ask: 'a contact email', schema: { type: 'object', properties: { email: { type: 'string', format: 'email', maxLength: 40 } }, required: ['email'] } },
  { name: 'date-time format', ask: 'a meeting time', schema: { type: 'object', properties: { at: { type: 'string', format: 'date-time', maxLength: 30 } }, required: ['at'] } },
  {
    name: 'string lengths',
    ask: 'a nickname',
    schema: { type: 'object', properties: { nickname: { type: 'string', minLength: 3, maxLength: 8 } }, required: ['nickname'] },
  },
  {
    name: 'string pattern',
    ask: 'a flight code',
    schema: { type: 'object', properties: { code: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{3}$' } }, required: ['code'] },
  },
  {
    name: '$defs and $ref',
    ask: 'two people',
    schema: {
      $defs: { person: { type: 'object', properties: { name: str, age: { type: 'integer', minimum: 0, maximum: 120 } }, required: ['name', 'age'] } },
      type: 'object',
      properties: { first: { $ref: '#/$defs/person' }, second: { $ref: '#/$defs/person' } },
      required: ['first', 'second'],
    },
  },
  {
    name: 'anyOf of primitives',
    ask: 'an identifier',
    schema: { type: 'object', properties: { id: { anyOf: [{ type: 'integer', minimum: 0, maximum: 100000 }, str] } }, required: ['id'] },
  },
  {
    name: 'anyOf of objects',
    ask: 'a shape',
    schema: {
      type: 'object',
      properties: {
        shape: {
          anyOf: [
            { type: 'object', properties: { circle: { type: 'number', minimum: 0, maximum: 100 } }, required: ['circle'], additionalProperties: false },
            { type: 'object', properties: { square: { type: 'number', minimum: 0, maximum: 100 } }, required: ['square'], additionalProperties: false },
          ],
        },
      },
      required: ['shape'],
    },
  },
  {
    name: 'allOf over a $ref',
    ask: 'a pet',
    schema: {
      $defs: {
        pet: { type: 'object', properties: { name: str, legs: { type: 'integer', minimum: 0, maximum: 8 } }, required: ['name'], additionalProperties: false },
      },
      allOf: [{ $ref: '#/$defs/pet' }, { required: ['legs'] }],
    },
  },
  {
    name: 'nullable',
    ask: 'a middle name, if any',
    schema: { type: 'object', properties: { middleName: { type: ['string', 'null'], maxLength: 20 } }, required: ['middleName'] },
  },
  {
    name: 'closed object with optional fields',
    ask: 'a city',
    schema: {
      type: 'object',
      properties: { name: str, country: str, population: { type: 'integer', minimum: 0 }, capital: { type: 'boolean' } },
      required: ['name', 'country'],
      additionalProperties: false,
    },
  },
  {
    name: 'three levels deep',
    ask: 'a company',
    schema: {
      type: 'object',
      properties: {
        company: {
          type: 'object',
          properties: { name: str, ceo: { type: 'object', properties: { name: str, contact: { type: 'object', properties: { phone: { type: 'string', pattern: '^[0-9]{3}-[0-9]{4}$' } }, required: ['phone'] } }, required: ['name', 'contact'] } },
          required: ['name', 'ceo'],
        },
      },
      required: ['company'],
    },
  },
  {
    name: 'mixed enums',
    ask: 'a setting',
    schema: { type: 'object', properties: { level: { enum: [1, 2, 3, 'max'] }, enabled: { enum: [true, false] } }, required: ['level', 'enabled'] },
  },
  {
    name: 'tuple with prefixItems',
    ask: 'a point',
    schema: {
      type: 'object',
      properties: { point: { type: 'array', prefixItems: [{ type: 'number', minimum: -10, maximum: 10 }, { type: 'number', minimum: -10, maximum: 10 }], items: false } },
      required: ['point'],
    },
  },
];

