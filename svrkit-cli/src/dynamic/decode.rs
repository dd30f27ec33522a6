//! Bytes to JSON, reading what the generated `merge_field` reads: packed and unpacked lists,
//! later singular values replacing earlier ones, a struct seen twice merged, unknown fields
//! skipped. Every list element and map entry is charged to the decoder's memory budget, so
//! a flood of tiny elements stops as it does for generated types.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};
use svrkit_runtime::codec::wire::{self, WireType};
use svrkit_runtime::codec::{DecodeError, Decoder};

use super::value::{Leaf, MapKey, Val};
use svrkit_codegen::ir::{FieldType, Schema, StructId, ValueType};

/// A decode error and where it happened, outermost field first.
#[derive(Debug)]
pub(super) struct Located {
    pub(super) path: Vec<String>,
    pub(super) error: DecodeError,
}

impl From<DecodeError> for Located {
    fn from(error: DecodeError) -> Located {
        Located {
            path: Vec::new(),
            error,
        }
    }
}

/// A struct being read: one slot per field, in the IR's (id) order.
pub(super) struct Acc {
    id: StructId,
    slots: Vec<Slot>,
}

enum Slot {
    Absent,
    Val(Val),
    Struct(Acc),
    List(Vec<Item>),
    Map(BTreeMap<MapKey, (Val, Item)>),
}

enum Item {
    Val(Val),
    Struct(Acc),
}

pub(super) struct Reader<'s> {
    pub(super) schema: &'s Schema,
}

impl Reader<'_> {
    pub(super) fn new_acc(&self, id: StructId) -> Acc {
        let n = self.schema.struct_(id).fields.len();
        Acc {
            id,
            slots: (0..n).map(|_| Slot::Absent).collect(),
        }
    }

    /// Reads fields until `d` is empty, into `acc`.
    pub(super) fn merge(&self, acc: &mut Acc, d: &mut Decoder<'_>) -> Result<(), Located> {
        let s = self.schema.struct_(acc.id);
        while !d.is_empty() {
            let key = d.read_key()?;
            let id = wire::key_field_id(key);
            // A field the schema does not declare, or a declared one whose wire type does
            // not fit (a peer whose schema changed it): the generated code keeps both as
            // unknown fields, which JSON has no place for.
            let Some(i) = s
                .fields
                .binary_search_by_key(&id, |f| f.id)
                .ok()
                .filter(|&i| self.fits(s.fields[i].ty, key & 7))
            else {
                d.skip_value(key)?;
                continue;
            };
            self.field(acc, i, key, d).map_err(|mut e| {
                e.path
                    .insert(0, format!("{}.{}", s.full_name, s.fields[i].name));
                e
            })?;
        }
        Ok(())
    }

    /// Whether wire type `wt` fits a field of type `ty` (packed and unpacked both fit a
    /// list of numbers).
    fn fits(&self, ty: FieldType, wt: u32) -> bool {
        let ld = WireType::LengthDelimited as u32;
        match ty {
            FieldType::Map(..) => wt == ld,
            FieldType::Singular(v) | FieldType::Optional(v) | FieldType::Repeated(v) => {
                match Leaf::of(self.schema, v) {
                    None => wt == ld,
                    Some(leaf) => {
                        wt == leaf.wire_type() as u32
                            || (matches!(ty, FieldType::Repeated(_))
                                && leaf.is_packable()
                                && wt == ld)
                    }
                }
            }
        }
    }

    /// Reads field `i`, whose wire type [`fits`](Self::fits).
    fn field(&self, acc: &mut Acc, i: usize, key: u32, d: &mut Decoder<'_>) -> Result<(), Located> {
        let f = &self.schema.struct_(acc.id).fields[i];
        let wt = key & 7;
        let slot = &mut acc.slots[i];
        match f.ty {
            FieldType::Singular(ValueType::Struct(id))
            | FieldType::Optional(ValueType::Struct(id)) => {
                if !matches!(slot, Slot::Struct(_)) {
                    *slot = Slot::Struct(self.new_acc(id));
                }
                let Slot::Struct(inner) = slot else {
                    unreachable!()
                };
                nested(d, |d| self.merge(inner, d))?;
            }
            FieldType::Singular(ty) | FieldType::Optional(ty) => {
                let leaf = self.leaf(ty);
                *slot = Slot::Val(leaf.decode(d)?);
            }
            FieldType::Repeated(ty) => {
                if !matches!(slot, Slot::List(_)) {
                    *slot = Slot::List(Vec::new());
                }
                let Slot::List(items) = slot else {
                    unreachable!()
                };
                match Leaf::of(self.schema, ty) {
                    Some(leaf) if leaf.is_packable() && wt == WireType::LengthDelimited as u32 => {
                        let mut packed = d.packed()?;
                        while !packed.is_empty() {
                            items.push(Item::Val(leaf.decode(&mut packed)?));
                        }
                    }
                    Some(leaf) => {
                        d.charge(size_of::<Item>())?;
                        items.push(Item::Val(leaf.decode(d)?));
                    }
                    None => {
                        let ValueType::Struct(id) = ty else {
                            unreachable!()
                        };
                        let fields = self.schema.struct_(id).fields.len();
                        d.charge(size_of::<Item>() + fields * size_of::<Slot>())?;
                        let mut inner = self.new_acc(id);
                        nested(d, |d| self.merge(&mut inner, d))?;
                        items.push(Item::Struct(inner));
                    }
                }
            }
            FieldType::Map(k, v) => {
                if !matches!(slot, Slot::Map(_)) {
                    *slot = Slot::Map(BTreeMap::new());
                }
                let Slot::Map(map) = slot else { unreachable!() };
                d.charge(2 * size_of::<(MapKey, Val, Item)>())?;
                let key_leaf = Leaf::Scalar(k);
                // An entry whose key or value does not fit is dropped, as the generated code
                // keeps it as an unknown field rather than read defaults into the map.
                if let Some((key_val, value)) = nested(d, |e| self.map_entry(key_leaf, v, e))? {
                    map.insert(MapKey::of(&key_val), (key_val, value));
                }
            }
        }
        Ok(())
    }

    fn map_entry(
        &self,
        key_leaf: Leaf<'_>,
        value_ty: ValueType,
        e: &mut Decoder<'_>,
    ) -> Result<Option<(Val, Item)>, Located> {
        let mut k = key_leaf.zero();
        let mut v = match Leaf::of(self.schema, value_ty) {
            Some(leaf) => Item::Val(leaf.zero()),
            None => match value_ty {
                ValueType::Struct(id) => Item::Struct(self.new_acc(id)),
                _ => unreachable!(),
            },
        };
        while !e.is_empty() {
            let key = e.read_key()?;
            match (wire::key_field_id(key), &mut v) {
                (1, _) if key & 7 == key_leaf.wire_type() as u32 => k = key_leaf.decode(e)?,
                (2, Item::Struct(acc)) if key & 7 == WireType::LengthDelimited as u32 => {
                    nested(e, |d| self.merge(acc, d))?;
                }
                (2, Item::Val(_)) if key & 7 == self.leaf(value_ty).wire_type() as u32 => {
                    v = Item::Val(self.leaf(value_ty).decode(e)?);
                }
                (1 | 2, _) => return Ok(None),
                // Unknown entry fields have nowhere to live; the generated code drops them too.
                _ => e.skip_value(key)?,
            }
        }
        Ok(Some((k, v)))
    }

    /// The JSON of a struct read so far: fields in id order, each left out where the
    /// generated code would not write it (a singular value at its default, an empty list).
    pub(super) fn to_json(&self, acc: &Acc) -> Json {
        let s = self.schema.struct_(acc.id);
        let mut obj = Map::new();
        for (f, slot) in s.fields.iter().zip(&acc.slots) {
            let value_ty = f.ty.value();
            let j = match slot {
                Slot::Absent => continue,
                Slot::Val(v) => {
                    let leaf = self.leaf(value_ty);
                    if let FieldType::Singular(_) = f.ty {
                        let at_default = match &f.default {
                            Some(d) if !d.is_zero() => *v == leaf.default_value(d),
                            _ => leaf.is_zero(v),
                        };
                        if at_default {
                            continue;
                        }
                    }
                    leaf.to_json(v)
                }
                Slot::Struct(inner) => self.to_json(inner),
                Slot::List(items) if items.is_empty() => continue,
                Slot::List(items) => Json::Array(
                    items
                        .iter()
                        .map(|item| self.item_json(value_ty, item))
                        .collect(),
                ),
                Slot::Map(map) => {
                    let FieldType::Map(k, _) = f.ty else {
                        unreachable!()
                    };
                    Json::Object(
                        map.values()
                            .map(|(key, item)| {
                                (
                                    Leaf::Scalar(k).key_to_json(key),
                                    self.item_json(value_ty, item),
                                )
                            })
                            .collect(),
                    )
                }
            };
            obj.insert(f.name.clone(), j);
        }
        Json::Object(obj)
    }

    fn item_json(&self, ty: ValueType, item: &Item) -> Json {
        match item {
            Item::Val(v) => self.leaf(ty).to_json(v),
            Item::Struct(acc) => self.to_json(acc),
        }
    }

    fn leaf(&self, ty: ValueType) -> Leaf<'_> {
        Leaf::of(self.schema, ty).expect("struct fields are handled before leaves")
    }
}

/// [`Decoder::nested`], keeping the location of an error from inside.
fn nested<R>(
    d: &mut Decoder<'_>,
    f: impl FnOnce(&mut Decoder<'_>) -> Result<R, Located>,
) -> Result<R, Located> {
    let mut located = None;
    let result = d.nested(|inner| {
        f(inner).map_err(|e| {
            let error = e.error.clone();
            located = Some(e);
            error
        })
    });
    result.map_err(|error| located.unwrap_or_else(|| error.into()))
}
